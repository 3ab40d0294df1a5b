// Properties of the Unity <-> canonical mapping on random data (no server, no files): each mapping is its
// own inverse, quaternions map as the mirror conjugates rotations, meshes survive a trip through any
// renderer placement, and mirrored triangles stay front-facing. They run in the Unity Test Runner and under
// mono (scripts/test_unity.sh).
using System;
using System.Linq;
using AnyMoLe.Core;
using NUnit.Framework;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class ConversionTests
    {
        static float[] RandomUnitQuats(Random rng, int n)
        {
            var q = new float[n * 4];
            for (int i = 0; i < n; i++)
            {
                double x = rng.NextDouble() * 2 - 1, y = rng.NextDouble() * 2 - 1, z = rng.NextDouble() * 2 - 1, w = rng.NextDouble() * 2 - 1;
                double len = Math.Sqrt(x * x + y * y + z * z + w * w);
                q[i * 4] = (float)(x / len); q[i * 4 + 1] = (float)(y / len); q[i * 4 + 2] = (float)(z / len); q[i * 4 + 3] = (float)(w / len);
            }
            return q;
        }

        static float[] RandomFloats(Random rng, int n, double scale = 1)
        {
            var r = new float[n];
            for (int i = 0; i < n; i++) r[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
            return r;
        }

        static void Rotate(float[] q, int qo, double[] v, double[] r)
        {
            double x = q[qo], y = q[qo + 1], z = q[qo + 2], w = q[qo + 3];
            // t = 2 q_v × v; v' = v + w t + q_v × t
            double tx = 2 * (y * v[2] - z * v[1]), ty = 2 * (z * v[0] - x * v[2]), tz = 2 * (x * v[1] - y * v[0]);
            r[0] = v[0] + w * tx + (y * tz - z * ty);
            r[1] = v[1] + w * ty + (z * tx - x * tz);
            r[2] = v[2] + w * tz + (x * ty - y * tx);
        }

        [Test]
        public void MirrorsAreTheirOwnInverseBitForBit()
        {
            var rng = new Random(1);
            var q = RandomUnitQuats(rng, 50);
            var p = RandomFloats(rng, 150, 3);
            var m = RandomFloats(rng, 64);
            CollectionAssert.AreEqual(q, UnitySpace.MirrorRotations(UnitySpace.MirrorRotations(q)));
            CollectionAssert.AreEqual(p, UnitySpace.MirrorVectors(UnitySpace.MirrorVectors(p)));
            CollectionAssert.AreEqual(m, UnitySpace.MirrorMatrices(UnitySpace.MirrorMatrices(m)));
            Assert.AreEqual(-p[0], UnitySpace.MirrorVectors(p)[0]);
            Assert.AreEqual(p[1], UnitySpace.MirrorVectors(p)[1]);
        }

        [Test]
        public void MirroredQuaternionRotatesMirroredVectorsIntoTheMirroredResult()
        {
            // The mapping must be R -> S R S: rotating S v by the mapped quaternion gives S (R v).
            var rng = new Random(2);
            var q = RandomUnitQuats(rng, 200);
            var mq = UnitySpace.MirrorRotations(q);
            var v = new double[3]; var sv = new double[3]; var r = new double[3]; var sr = new double[3];
            for (int i = 0; i < 200; i++)
            {
                v[0] = rng.NextDouble() - 0.5; v[1] = rng.NextDouble() - 0.5; v[2] = rng.NextDouble() - 0.5;
                sv[0] = -v[0]; sv[1] = v[1]; sv[2] = v[2];
                Rotate(q, i * 4, v, r);
                Rotate(mq, i * 4, sv, sr);
                Assert.AreEqual(-r[0], sr[0], 1e-6);
                Assert.AreEqual(r[1], sr[1], 1e-6);
                Assert.AreEqual(r[2], sr[2], 1e-6);
            }
        }

        [Test]
        public void MirroredMatrixMatchesMirroredPointsAndRotation()
        {
            // S M S applied to S p equals S (M p); FromTR of mirrored t and q equals the mirrored matrix.
            var rng = new Random(3);
            var t = RandomFloats(rng, 3, 2);
            var q = RandomUnitQuats(rng, 1);
            var m = Mat4.FromTR(t, 0, q, 0);
            var mm = Mat4.FromTR(UnitySpace.MirrorVectors(t), 0, UnitySpace.MirrorRotations(q), 0);
            var conj = UnitySpace.MirrorMatrices(m);
            for (int i = 0; i < 16; i++) Assert.AreEqual(conj[i], mm[i], 1e-6, "element " + i);
        }

        static Character RandomCharacter(Random rng, int joints, int vertices)
        {
            var s = new Skeleton
            {
                Names = new string[joints], Parents = new int[joints],
                RestTranslations = RandomFloats(rng, joints * 3, 0.5), RestRotations = RandomUnitQuats(rng, joints),
            };
            for (int j = 0; j < joints; j++) { s.Names[j] = "joint" + j; s.Parents[j] = j == 0 ? -1 : rng.Next(j); }
            var mesh = new SkinnedMesh
            {
                Positions = RandomFloats(rng, vertices * 3, 1), Uvs = new float[vertices * 2], Triangles = new int[(vertices - 2) * 3],
                InfluencesPerVertex = 2, JointIndices = new int[vertices * 2], JointWeights = new float[vertices * 2],
                InverseBindMatrices = UnitySpace.InverseRestMatrices(s),
            };
            var n = RandomFloats(rng, vertices * 3);
            for (int i = 0; i < vertices; i++)
            {
                double len = Math.Sqrt(n[i * 3] * n[i * 3] + n[i * 3 + 1] * n[i * 3 + 1] + n[i * 3 + 2] * n[i * 3 + 2]);
                for (int k = 0; k < 3; k++) n[i * 3 + k] = (float)(n[i * 3 + k] / len);
                mesh.Uvs[i * 2] = (float)rng.NextDouble(); mesh.Uvs[i * 2 + 1] = (float)rng.NextDouble();
                mesh.JointIndices[i * 2] = rng.Next(joints); mesh.JointIndices[i * 2 + 1] = rng.Next(joints);
                float w = (float)rng.NextDouble();
                mesh.JointWeights[i * 2] = w; mesh.JointWeights[i * 2 + 1] = 1 - w;
            }
            mesh.Normals = n;
            for (int t = 0; t < vertices - 2; t++) { mesh.Triangles[t * 3] = t; mesh.Triangles[t * 3 + 1] = t + 1; mesh.Triangles[t * 3 + 2] = t + 2; }
            return new Character { Name = "random", Skeleton = s, Mesh = mesh };
        }

        static float[] RandomPlacement(Random rng)
        {
            // A renderer under the Animator root: rotated, moved and uniformly scaled.
            var m = Mat4.FromTR(RandomFloats(rng, 3, 2), 0, RandomUnitQuats(rng, 1), 0);
            float s = (float)(0.5 + rng.NextDouble());
            for (int i = 0; i < 12; i++) m[i] *= s;
            return m;
        }

        public static void AssertClose(float[] expected, float[] actual, double tol, string what)
        {
            Assert.AreEqual(expected.Length, actual.Length, what + ": length");
            for (int i = 0; i < expected.Length; i++)
                if (Math.Abs(expected[i] - actual[i]) > tol)
                    Assert.Fail(what + "[" + i + "]: expected " + expected[i] + ", got " + actual[i]);
        }

        [Test]
        public void MeshSurvivesCanonicalToUnityToCanonicalUnderAnyRendererPlacement()
        {
            var rng = new Random(4);
            for (int trial = 0; trial < 5; trial++)
            {
                var c = RandomCharacter(rng, 7, 30);
                var placement = RandomPlacement(rng);
                var unity = UnitySpace.ToUnity(c.Mesh, placement);
                var back = UnitySpace.ToCanonical(c.Name, UnitySpace.Convert(c.Skeleton), unity);
                AssertClose(c.Mesh.Positions, back.Mesh.Positions, 1e-5, "positions");
                AssertClose(c.Mesh.Normals, back.Mesh.Normals, 1e-5, "normals");
                AssertClose(c.Mesh.Uvs, back.Mesh.Uvs, 1e-6, "uvs");
                AssertClose(c.Mesh.InverseBindMatrices, back.Mesh.InverseBindMatrices, 1e-4, "inverse bind matrices");
                CollectionAssert.AreEqual(c.Mesh.Triangles, back.Mesh.Triangles);
                CollectionAssert.AreEqual(c.Mesh.JointIndices, back.Mesh.JointIndices);
                CollectionAssert.AreEqual(c.Skeleton.RestRotations, back.Skeleton.RestRotations);
                CollectionAssert.AreEqual(c.Skeleton.RestTranslations, back.Skeleton.RestTranslations);
            }
        }

        [Test]
        public void UnityMeshMapsRendererSpaceIntoCharacterSpace()
        {
            // A vertex at the renderer's origin lands where the placement puts it, mirrored; a bind pose maps
            // renderer space to bone space, so bindpose · placement⁻¹ is the canonical inverse bind (mirrored).
            var rng = new Random(5);
            var c = RandomCharacter(rng, 4, 5);
            var placement = RandomPlacement(rng);
            var unity = UnitySpace.ToUnity(c.Mesh, placement);
            unity.Vertices[0] = 0; unity.Vertices[1] = 0; unity.Vertices[2] = 0;
            var back = UnitySpace.ToCanonical("x", UnitySpace.Convert(c.Skeleton), unity);
            Assert.AreEqual(-placement[12], back.Mesh.Positions[0], 1e-6);
            Assert.AreEqual(placement[13], back.Mesh.Positions[1], 1e-6);
            Assert.AreEqual(placement[14], back.Mesh.Positions[2], 1e-6);
            // Skinning at rest: bindpose_b · v_renderer equals the canonical IBM · p_character, mirrored.
            var boneSpace = new float[3]; var canonicalBoneSpace = new float[3];
            for (int b = 0; b < 4; b++)
            {
                var bind = new float[16];
                Array.Copy(unity.Bindposes, b * 16, bind, 0, 16);
                Mat4.TransformPoint(bind, unity.Vertices, 3, boneSpace, 0);
                var ibm = new float[16];
                Array.Copy(c.Mesh.InverseBindMatrices, b * 16, ibm, 0, 16);
                Mat4.TransformPoint(ibm, c.Mesh.Positions, 3, canonicalBoneSpace, 0);
                Assert.AreEqual(-canonicalBoneSpace[0], boneSpace[0], 1e-4);
                Assert.AreEqual(canonicalBoneSpace[1], boneSpace[1], 1e-4);
                Assert.AreEqual(canonicalBoneSpace[2], boneSpace[2], 1e-4);
            }
        }

        [Test]
        public void MirroredTrianglesKeepFacingTheirNormals()
        {
            // Canonical fronts are counter-clockwise in a right-handed frame, Unity's clockwise in a left-handed
            // one; in both, cross(b - a, c - a) of the stored order agrees with the vertex normals. Without
            // the reversed winding every triangle would flip.
            var rng = new Random(6);
            var c = RandomCharacter(rng, 3, 40);
            var unity = UnitySpace.ToUnity(c.Mesh);
            int agreeCanonical = 0, agreeUnity = 0;
            for (int t = 0; t < c.Mesh.Triangles.Length; t += 3)
            {
                agreeCanonical += Facing(c.Mesh.Positions, c.Mesh.Normals, c.Mesh.Triangles, t) > 0 ? 1 : 0;
                agreeUnity += Facing(unity.Vertices, unity.Normals, unity.Triangles, t) > 0 ? 1 : 0;
            }
            Assert.AreEqual(agreeCanonical, agreeUnity);
            Assert.That(agreeCanonical, Is.GreaterThan(0));
            Assert.That(agreeCanonical, Is.LessThan(c.Mesh.Triangles.Length / 3));
        }

        public static double Facing(float[] p, float[] n, int[] tri, int t)
        {
            int a = tri[t] * 3, b = tri[t + 1] * 3, c = tri[t + 2] * 3;
            double ux = p[b] - p[a], uy = p[b + 1] - p[a + 1], uz = p[b + 2] - p[a + 2];
            double vx = p[c] - p[a], vy = p[c + 1] - p[a + 1], vz = p[c + 2] - p[a + 2];
            double cx = uy * vz - uz * vy, cy = uz * vx - ux * vz, cz = ux * vy - uy * vx;
            return cx * n[a] + cy * n[a + 1] + cz * n[a + 2];
        }

        [Test]
        public void UvVFlipsAndMotionMirrorsExactly()
        {
            CollectionAssert.AreEqual(new[] { 0.25f, 0.75f, 1f, 1f }, UnitySpace.FlipV(new[] { 0.25f, 0.25f, 1f, 0f }));
            CollectionAssert.AreEqual(new[] { 0, 2, 1, 3, 5, 4 }, UnitySpace.ReverseWinding(new[] { 0, 1, 2, 3, 4, 5 }));
            var rng = new Random(7);
            var m = new Motion { Fps = 30, FrameCount = 3, JointCount = 2, Rotations = RandomUnitQuats(rng, 6), RootTranslations = RandomFloats(rng, 9) };
            var back = UnitySpace.Convert(UnitySpace.Convert(m));
            CollectionAssert.AreEqual(m.Rotations, back.Rotations);
            CollectionAssert.AreEqual(m.RootTranslations, back.RootTranslations);
            Assert.AreEqual(m.Rotations[1], -UnitySpace.Convert(m).Rotations[1]);
            Assert.AreEqual(m.Rotations[0], UnitySpace.Convert(m).Rotations[0]);
        }

        [Test]
        public void SnapshotSurvivesItsTextForm()
        {
            var s = new SessionSnapshot { JobId = "job-1", LastSeq = 42, JointCount = 24, ContextFrames = 40, TotalFrames = 83 };
            s.Tags["asset"] = "Assets/Fox;Survey=1.anim";
            s.Tags["editor"] = "é";
            var back = SessionSnapshot.Parse(s.ToString());
            Assert.AreEqual("job-1", back.JobId);
            Assert.AreEqual(42UL, back.LastSeq);
            CollectionAssert.AreEquivalent(s.Tags, back.Tags);
            Assert.AreEqual(83, back.TotalFrames);
            Assert.Throws<FormatException>(() => SessionSnapshot.Parse("garbage"));
        }

        [Test]
        public void MergedMeshesKeepEachVertexTriangleAndMaterial()
        {
            // Two renderers: a body bound to joints 0-2 with 2 influences, a hat bound to joint 3 with 1 and no uvs.
            var rng = new Random(8);
            var body = RandomCharacter(rng, 4, 6).Mesh;
            for (int i = 0; i < body.JointIndices.Length; i++) body.JointIndices[i] %= 3;
            body.Materials.Add(new Material { Name = "skin", BaseColor = new[] { 1f, 0.8f, 0.7f, 1f } });
            var hat = new SkinnedMesh
            {
                Positions = RandomFloats(rng, 9), Triangles = new[] { 0, 1, 2 }, InfluencesPerVertex = 1,
                JointIndices = new[] { 3, 3, 3 }, JointWeights = new[] { 1f, 1f, 1f }, InverseBindMatrices = RandomFloats(rng, 64),
            };
            hat.Textures.Add(new Texture { MimeType = "image/png", Data = new byte[] { 1 } });
            hat.Materials.Add(new Material { Name = "felt", Texture = 0 });
            var merged = MeshMerge.Merge(new[] { body, hat }, 4);
            Assert.AreEqual(9, merged.VertexCount);
            CollectionAssert.AreEqual(body.Triangles.Concat(new[] { 6, 7, 8 }).ToArray(), merged.Triangles);
            Assert.AreEqual(2, merged.InfluencesPerVertex);
            CollectionAssert.AreEqual(new[] { 3, 0, 3, 0, 3, 0 }, merged.JointIndices.Skip(12).ToArray());
            CollectionAssert.AreEqual(new[] { 1f, 0f, 1f, 0f, 1f, 0f }, merged.JointWeights.Skip(12).ToArray());
            CollectionAssert.AreEqual(body.JointWeights, merged.JointWeights.Take(12).ToArray());
            CollectionAssert.AreEqual(Enumerable.Repeat(0, 4).Concat(new[] { 1 }).ToArray(), merged.TriangleMaterials);
            Assert.AreEqual(new[] { "skin", "felt" }, merged.Materials.Select(m => m.Name).ToArray());
            Assert.AreEqual(0, merged.Materials[1].Texture);
            Assert.AreEqual(18, merged.Uvs.Length);
            // Joint 3's inverse bind comes from the hat, the only mesh it moves; joints 0-2 from the body.
            CollectionAssert.AreEqual(hat.InverseBindMatrices.Skip(48).ToArray(), merged.InverseBindMatrices.Skip(48).ToArray());
            CollectionAssert.AreEqual(body.InverseBindMatrices.Take(48).ToArray(), merged.InverseBindMatrices.Take(48).ToArray());
        }
    }
}
