// The one mapping between Unity's space and the wire's canonical (glTF) space, for skeletons, meshes and
// motion. Unity is left-handed, +Y up, +Z forward, metres; canonical is right-handed, +Y up, +Z forward,
// metres. As glTFast imports glTF into Unity: positions and normals (-x, y, z), rotations (x, -y, -z, w), so
// a glTF character imported into Unity sends back the numbers the server reads from the file. The mirror
// S = diag(-1, 1, 1) makes each mapping its own inverse:
//   matrices           S · M · S (conjugated: bind poses, inverse bind matrices)
//   texture v          1 - v (Unity counts v up from the bottom row, glTF down from the top)
//   triangle winding   reversed (the mirror turns counter-clockwise into clockwise; Unity's front faces are
//                      clockwise, glTF's counter-clockwise, so the same faces stay in front)
// A Unity mesh lives in its renderer's space and Mesh.bindposes map that space to bone space; the canonical
// mesh lives in character space (the Animator root's), so meshes also move through the renderer's matrix
// relative to the root at bind time.
using System;
using System.Collections.Generic;

namespace AnyMoLe.Core
{
    /// <summary>A SkinnedMeshRenderer's mesh as Unity holds it (Unity space, the renderer's own space).</summary>
    public sealed class UnityMesh
    {
        /// <summary>V × 3 Mesh.vertices.</summary>
        public float[] Vertices = new float[0];
        /// <summary>V × 3 Mesh.normals, or empty.</summary>
        public float[] Normals = new float[0];
        /// <summary>V × 2 Mesh.uv, or empty.</summary>
        public float[] Uv = new float[0];
        /// <summary>T × 3 Mesh.triangles (clockwise seen from the front).</summary>
        public int[] Triangles = new int[0];
        /// <summary>K influences per vertex (pad with weight 0).</summary>
        public int BonesPerVertex;
        /// <summary>V × K indices into the renderer's bones.</summary>
        public int[] BoneIndices = new int[0];
        public float[] BoneWeights = new float[0];
        /// <summary>B: the skeleton joint of each of SkinnedMeshRenderer.bones.</summary>
        public int[] BoneJoints = new int[0];
        /// <summary>B × 16 Mesh.bindposes (renderer space → bone space), column-major.</summary>
        public float[] Bindposes = new float[0];
        /// <summary>16: the renderer's transform relative to the Animator root at bind time (renderer → character).</summary>
        public float[] MeshToCharacter = Mat4.Identity();
        /// <summary>V × 4 Mesh.colors, or empty.</summary>
        public float[] Colors = new float[0];
        /// <summary>T: each triangle's sub-mesh (its material slot), or empty for one sub-mesh.</summary>
        public int[] TriangleMaterials = new int[0];
        /// <summary>Renderer.sharedMaterials as the wire describes them, one per sub-mesh.</summary>
        public List<Material> Materials = new List<Material>();
        /// <summary>The encoded images the materials refer to (unchanged: v is flipped in the uvs instead).</summary>
        public List<Texture> Textures = new List<Texture>();
    }

    public static class UnitySpace
    {
        /// <summary>Positions or directions, 3 floats each: x negated.</summary>
        public static float[] MirrorVectors(float[] v)
        {
            var r = (float[])v.Clone();
            for (int i = 0; i < r.Length; i += 3) r[i] = -r[i];
            return r;
        }

        /// <summary>Quaternions x y z w: (x, -y, -z, w), the rotation S R S.</summary>
        public static float[] MirrorRotations(float[] q)
        {
            var r = (float[])q.Clone();
            for (int i = 0; i < r.Length; i += 4)
            {
                r[i + 1] = -r[i + 1];
                r[i + 2] = -r[i + 2];
            }
            return r;
        }

        /// <summary>Column-major 4×4 matrices: S · M · S, i.e. row 0 and column 0 negated (m00 twice: kept).</summary>
        public static float[] MirrorMatrices(float[] m)
        {
            var r = (float[])m.Clone();
            for (int o = 0; o < r.Length; o += 16)
                for (int c = 0; c < 4; c++)
                    for (int row = 0; row < 4; row++)
                        if ((row == 0) != (c == 0)) r[o + c * 4 + row] = -r[o + c * 4 + row];
            return r;
        }

        /// <summary>A skeleton's rest pose from one space to the other (the mapping is its own inverse).</summary>
        public static Skeleton Convert(Skeleton s)
        {
            return new Skeleton
            {
                Names = (string[])s.Names.Clone(),
                Parents = (int[])s.Parents.Clone(),
                RestTranslations = MirrorVectors(s.RestTranslations),
                RestRotations = MirrorRotations(s.RestRotations),
            };
        }

        /// <summary>A clip or a keyframe set from one space to the other.</summary>
        public static Motion Convert(Motion m)
        {
            return new Motion
            {
                Fps = m.Fps, FrameCount = m.FrameCount, JointCount = m.JointCount,
                Rotations = MirrorRotations(m.Rotations),
                RootTranslations = MirrorVectors(m.RootTranslations),
                Translations = m.Translations == null ? null : MirrorVectors(m.Translations),
            };
        }

        public static Keyframe Convert(Keyframe k)
        {
            return new Keyframe
            {
                Frame = k.Frame,
                Rotations = MirrorRotations(k.Rotations),
                RootTranslation = MirrorVectors(k.RootTranslation),
                Translations = k.Translations == null ? null : MirrorVectors(k.Translations),
            };
        }

        /// <summary>The canonical character of a Unity skeleton (Unity space, parent-relative rest pose) and its
        /// skinned mesh (null for a skeleton-only character).</summary>
        public static Character ToCanonical(string name, Skeleton unitySkeleton, UnityMesh mesh)
        {
            var skeleton = Convert(unitySkeleton);
            var c = new Character { Name = name, Skeleton = skeleton };
            if (mesh == null) return c;
            int v = mesh.Vertices.Length / 3, k = mesh.BonesPerVertex, j = skeleton.JointCount;
            var m = mesh.MeshToCharacter;
            var mInv = Mat4.Inverse(m);
            var positions = new float[v * 3];
            for (int i = 0; i < v; i++) Mat4.TransformPoint(m, mesh.Vertices, i * 3, positions, i * 3);
            var normals = new float[mesh.Normals.Length];
            for (int i = 0; i < normals.Length / 3; i++) Mat4.TransformNormal(mInv, mesh.Normals, i * 3, normals, i * 3);
            var joints = new int[mesh.BoneIndices.Length];
            for (int i = 0; i < joints.Length; i++) joints[i] = mesh.BoneJoints[mesh.BoneIndices[i]];
            // A joint no bone stands for (unskinned) takes the inverse of its rest pose in character space.
            var ibm = MirrorMatrices(InverseRestMatrices(unitySkeleton));
            for (int b = 0; b < mesh.BoneJoints.Length; b++)
            {
                // character → renderer → bone; a renderer at the root keeps every bit (a product would turn -0 into 0)
                var bind = new float[16];
                if (Mat4.IsIdentity(m)) Array.Copy(mesh.Bindposes, b * 16, bind, 0, 16);
                else bind = Mat4.Mul(mesh.Bindposes, b * 16, mInv, 0);
                Array.Copy(MirrorMatrices(bind), 0, ibm, mesh.BoneJoints[b] * 16, 16);
            }
            c.Mesh = new SkinnedMesh
            {
                Positions = MirrorVectors(positions),
                Normals = MirrorVectors(normals),
                Uvs = FlipV(mesh.Uv),
                Triangles = ReverseWinding(mesh.Triangles),
                InfluencesPerVertex = k,
                JointIndices = joints,
                JointWeights = (float[])mesh.BoneWeights.Clone(),
                InverseBindMatrices = ibm,
                Colors = (float[])mesh.Colors.Clone(),
                TriangleMaterials = (int[])mesh.TriangleMaterials.Clone(),
                Materials = new List<Material>(mesh.Materials),
                Textures = new List<Texture>(mesh.Textures),
            };
            if (ibm.Length != j * 16) throw new ArgumentException("the mesh's bones name joints beyond the skeleton", "mesh");
            return c;
        }

        /// <summary>A canonical mesh as Unity would hold it under a renderer at <paramref name="meshToCharacter"/>
        /// (null: the Animator root itself), bound to every joint in skeleton order.</summary>
        public static UnityMesh ToUnity(SkinnedMesh mesh, float[] meshToCharacter = null)
        {
            var m = meshToCharacter ?? Mat4.Identity();
            var mInv = Mat4.Inverse(m);
            var inCharacter = MirrorVectors(mesh.Positions);
            int v = inCharacter.Length / 3, j = mesh.InverseBindMatrices.Length / 16;
            var vertices = new float[v * 3];
            for (int i = 0; i < v; i++) Mat4.TransformPoint(mInv, inCharacter, i * 3, vertices, i * 3);
            var n = MirrorVectors(mesh.Normals);
            var normals = new float[n.Length];
            for (int i = 0; i < n.Length / 3; i++) Mat4.TransformNormal(m, n, i * 3, normals, i * 3);
            var bindposes = new float[j * 16];
            var ibm = MirrorMatrices(mesh.InverseBindMatrices);
            if (Mat4.IsIdentity(m)) bindposes = ibm;
            else for (int b = 0; b < j; b++) Array.Copy(Mat4.Mul(ibm, b * 16, m, 0), 0, bindposes, b * 16, 16);
            var boneJoints = new int[j];
            for (int b = 0; b < j; b++) boneJoints[b] = b;
            return new UnityMesh
            {
                Vertices = vertices, Normals = normals, Uv = FlipV(mesh.Uvs), Triangles = ReverseWinding(mesh.Triangles),
                BonesPerVertex = mesh.InfluencesPerVertex, BoneIndices = (int[])mesh.JointIndices.Clone(),
                BoneWeights = (float[])mesh.JointWeights.Clone(), BoneJoints = boneJoints, Bindposes = bindposes,
                MeshToCharacter = (float[])m.Clone(), Colors = (float[])mesh.Colors.Clone(),
                TriangleMaterials = (int[])mesh.TriangleMaterials.Clone(),
                Materials = new List<Material>(mesh.Materials), Textures = new List<Texture>(mesh.Textures),
            };
        }

        /// <summary>u, v → u, 1 - v (both directions).</summary>
        public static float[] FlipV(float[] uv)
        {
            var r = (float[])uv.Clone();
            for (int i = 1; i < r.Length; i += 2) r[i] = 1f - r[i];
            return r;
        }

        /// <summary>Each triangle (a, b, c) → (a, c, b) (both directions).</summary>
        public static int[] ReverseWinding(int[] triangles)
        {
            var r = (int[])triangles.Clone();
            for (int i = 0; i + 2 < r.Length; i += 3)
            {
                r[i + 1] = triangles[i + 2];
                r[i + 2] = triangles[i + 1];
            }
            return r;
        }

        /// <summary>J × 16: the inverse of each joint's rest transform in the skeleton's root space (forward
        /// kinematics over parents, which come before their children).</summary>
        public static float[] InverseRestMatrices(Skeleton s)
        {
            int j = s.JointCount;
            var world = new float[j][];
            var r = new float[j * 16];
            for (int i = 0; i < j; i++)
            {
                var local = Mat4.FromTR(s.RestTranslations, i * 3, s.RestRotations, i * 4);
                world[i] = s.Parents[i] < 0 ? local : Mat4.Mul(world[s.Parents[i]], local);
                Array.Copy(Mat4.Inverse(world[i]), 0, r, i * 16, 16);
            }
            return r;
        }
    }
}
