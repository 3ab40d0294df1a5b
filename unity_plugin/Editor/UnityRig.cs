// Engine types in and out, nothing else: the skeleton, skinned mesh and clip of an Animator as the core's
// Unity-space data, and a result written back into the clip with Undo. The axis mapping itself lives in
// AnyMoLe.Core.UnitySpace. Generic rigs only: a Humanoid clip stores muscle curves, not joint rotations.
using System;
using System.Collections.Generic;
using System.Linq;
using Core = AnyMoLe.Core;
using UnityEditor;
using UnityEngine;

namespace AnyMoLe.Editor
{
    public sealed class UnityRig
    {
        /// <summary>Transform paths relative to the Animator ("" is the Animator itself), in skeleton order.</summary>
        public readonly List<string> Paths = new List<string>();
        public readonly List<Transform> Joints = new List<Transform>();
        public Core.Skeleton UnitySkeleton;
        /// <summary>One mesh per SkinnedMeshRenderer under the Animator whose bones lie in the skeleton.</summary>
        public readonly List<Core.UnityMesh> Meshes = new List<Core.UnityMesh>();
        public string Name;

        /// <summary>The skeleton under the first SkinnedMeshRenderer's root bone (or under the Animator), parents
        /// before children, with the current local transforms as rest pose; the meshes of every renderer skinned
        /// to it (a body, clothes, hair).</summary>
        public static UnityRig Read(Animator animator)
        {
            if (animator.isHuman)
                throw new InvalidOperationException(animator.name + " is a Humanoid rig: AnyMoLe fills Generic rigs only for now " +
                    "(its clips hold muscle curves). Set the model's Animation Type to Generic, or bake the clip to a Generic copy.");
            var rig = new UnityRig { Name = animator.name };
            var smr = animator.GetComponentInChildren<SkinnedMeshRenderer>();
            var top = smr != null && smr.rootBone != null ? smr.rootBone : animator.transform;
            var parents = new List<int>();
            var stack = new Stack<KeyValuePair<Transform, int>>();
            stack.Push(new KeyValuePair<Transform, int>(top, -1));
            while (stack.Count > 0)
            {
                var item = stack.Pop();
                int index = rig.Joints.Count;
                rig.Joints.Add(item.Key);
                parents.Add(item.Value);
                rig.Paths.Add(PathOf(item.Key, animator.transform));
                for (int c = item.Key.childCount - 1; c >= 0; c--)
                    if (item.Key.GetChild(c).GetComponent<Renderer>() == null)
                        stack.Push(new KeyValuePair<Transform, int>(item.Key.GetChild(c), index));
            }
            int j = rig.Joints.Count;
            var s = new Core.Skeleton { Names = new string[j], Parents = parents.ToArray(), RestTranslations = new float[j * 3], RestRotations = new float[j * 4] };
            // Transform names need not be unique, the wire's joint names must be: a repeated name becomes the
            // joint's path under the Animator (a file's unique names stay as the server reads them from it).
            var repeated = rig.Joints.GroupBy(t => t.name).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
            for (int i = 0; i < j; i++)
            {
                var t = rig.Joints[i];
                s.Names[i] = repeated.Contains(t.name) ? rig.Paths[i] : t.name;
                // The contract has no joint scale: a non-uniform one cannot be expressed, so it is refused by name.
                var k = t.localScale;
                if (Mathf.Abs(k.x - k.y) > 1e-4f * Mathf.Abs(k.x) || Mathf.Abs(k.x - k.z) > 1e-4f * Mathf.Abs(k.x))
                    throw new InvalidOperationException("joint '" + rig.Paths[i] + "' has a non-uniform scale " + k +
                        "; AnyMoLe takes rigs without joint scale (apply the scale to the model, or reset it)");
                // A root's rest translation is in character (Animator) space.
                var p = i == 0 ? animator.transform.InverseTransformPoint(t.position) : t.localPosition;
                var q = i == 0 ? Quaternion.Inverse(animator.transform.rotation) * t.rotation : t.localRotation;
                Put3(s.RestTranslations, i, p);
                Put4(s.RestRotations, i, q);
            }
            rig.UnitySkeleton = s;
            foreach (var r in animator.GetComponentsInChildren<SkinnedMeshRenderer>())
                if (r.sharedMesh != null) rig.Meshes.Add(ReadMesh(animator, r, rig.Joints));
            return rig;
        }

        /// <summary>The character the wire carries: the skeleton and every renderer's mesh in canonical space,
        /// merged into one.</summary>
        public Core.Character ToCanonical()
        {
            var c = Core.UnitySpace.ToCanonical(Name, UnitySkeleton, null);
            if (Meshes.Count > 0)
                c.Mesh = Core.MeshMerge.Merge(Meshes.Select(m => Core.UnitySpace.ToCanonical(Name, UnitySkeleton, m).Mesh).ToList(), c.Skeleton.JointCount);
            return c;
        }

        static string PathOf(Transform t, Transform root)
        {
            var parts = new List<string>();
            for (var x = t; x != null && x != root; x = x.parent) parts.Insert(0, x.name);
            return string.Join("/", parts.ToArray());
        }

        static Core.UnityMesh ReadMesh(Animator animator, SkinnedMeshRenderer smr, List<Transform> joints)
        {
            var mesh = smr.sharedMesh;
            var index = new Dictionary<Transform, int>();
            for (int i = 0; i < joints.Count; i++) index[joints[i]] = i;
            var bones = smr.bones;
            var boneJoints = new int[bones.Length];
            for (int b = 0; b < bones.Length; b++)
                if (bones[b] == null || !index.TryGetValue(bones[b], out boneJoints[b]))
                    throw new InvalidOperationException("bone " + b + " of " + smr.name + " is not under its root bone; " +
                        "set the SkinnedMeshRenderer's Root Bone to the top of its skeleton");
            var u = new Core.UnityMesh { BoneJoints = boneJoints };
            var v = mesh.vertices;
            u.Vertices = new float[v.Length * 3];
            for (int i = 0; i < v.Length; i++) Put3(u.Vertices, i, v[i]);
            var n = mesh.normals;
            u.Normals = new float[n.Length * 3];
            for (int i = 0; i < n.Length; i++) Put3(u.Normals, i, n[i]);
            var uv = mesh.uv;
            u.Uv = new float[uv.Length * 2];
            for (int i = 0; i < uv.Length; i++) { u.Uv[i * 2] = uv[i].x; u.Uv[i * 2 + 1] = uv[i].y; }
            var colors = mesh.colors;
            u.Colors = new float[colors.Length * 4];
            for (int i = 0; i < colors.Length; i++) { u.Colors[i * 4] = colors[i].r; u.Colors[i * 4 + 1] = colors[i].g; u.Colors[i * 4 + 2] = colors[i].b; u.Colors[i * 4 + 3] = colors[i].a; }
            // Sub-meshes become materials: each triangle keeps its sub-mesh's slot.
            var triangles = new List<int>();
            var slots = new List<int>();
            var materials = smr.sharedMaterials;
            for (int sub = 0; sub < mesh.subMeshCount; sub++)
            {
                var tri = mesh.GetTriangles(sub);
                triangles.AddRange(tri);
                for (int t = 0; t < tri.Length / 3; t++) slots.Add(sub);
                var m = sub < materials.Length ? materials[sub] : null;
                var color = m == null ? Color.grey : m.HasProperty("_BaseColor") ? m.GetColor("_BaseColor") : m.HasProperty("_Color") ? m.color : Color.grey;
                u.Materials.Add(new Core.Material { Name = m == null ? "" : m.name, BaseColor = new[] { color.r, color.g, color.b, color.a } });
            }
            u.Triangles = triangles.ToArray();
            u.TriangleMaterials = mesh.subMeshCount > 1 ? slots.ToArray() : new int[0];
            // Variable influences per vertex (sorted by weight) padded to the most any vertex has.
            var perVertex = mesh.GetBonesPerVertex();
            var weights = mesh.GetAllBoneWeights();
            int k = 1;
            for (int i = 0; i < perVertex.Length; i++) k = Math.Max(k, perVertex[i]);
            u.BonesPerVertex = k;
            u.BoneIndices = new int[v.Length * k];
            u.BoneWeights = new float[v.Length * k];
            for (int i = 0, w = 0; i < perVertex.Length; i++)
                for (int c = 0; c < perVertex[i]; c++, w++)
                {
                    u.BoneIndices[i * k + c] = weights[w].boneIndex;
                    u.BoneWeights[i * k + c] = weights[w].weight;
                }
            var binds = mesh.bindposes;
            u.Bindposes = new float[binds.Length * 16];
            for (int b = 0; b < binds.Length; b++) Array.Copy(ToFloats(binds[b]), 0, u.Bindposes, b * 16, 16);
            u.MeshToCharacter = ToFloats(animator.transform.worldToLocalMatrix * smr.transform.localToWorldMatrix);
            return u;
        }

        /// <summary>Column-major: element (r, c) at c * 4 + r, as Matrix4x4 stores m00, m10, m20, m30, m01, ...</summary>
        static float[] ToFloats(Matrix4x4 m)
        {
            var r = new float[16];
            for (int c = 0; c < 4; c++)
                for (int row = 0; row < 4; row++) r[c * 4 + row] = m[row, c];
            return r;
        }

        static void Put3(float[] a, int i, Vector3 v) { a[i * 3] = v.x; a[i * 3 + 1] = v.y; a[i * 3 + 2] = v.z; }
        static void Put4(float[] a, int i, Quaternion q) { a[i * 4] = q.x; a[i * 4 + 1] = q.y; a[i * 4 + 2] = q.z; a[i * 4 + 3] = q.w; }

        static AnimationCurve Curve(AnimationClip clip, string path, string property)
        {
            return AnimationUtility.GetEditorCurve(clip, EditorCurveBinding.FloatCurve(path, typeof(Transform), property));
        }

        /// <summary>The clip sampled on its frame grid (Unity space): rotations from m_LocalRotation curves (or
        /// localEulerAnglesRaw), the root's position from m_LocalPosition; joints without curves keep their rest.</summary>
        public Core.Motion ReadClip(AnimationClip clip)
        {
            if (clip.humanMotion)
                throw new InvalidOperationException(clip.name + " is a Humanoid clip (muscle curves): AnyMoLe fills Generic clips only for now.");
            int j = Joints.Count, frames = Mathf.RoundToInt(clip.length * clip.frameRate) + 1;
            var m = new Core.Motion { Fps = clip.frameRate, FrameCount = frames, JointCount = j, Rotations = new float[frames * j * 4], RootTranslations = new float[frames * 3] };
            for (int i = 0; i < j; i++)
            {
                var q = new[] { Curve(clip, Paths[i], "m_LocalRotation.x"), Curve(clip, Paths[i], "m_LocalRotation.y"), Curve(clip, Paths[i], "m_LocalRotation.z"), Curve(clip, Paths[i], "m_LocalRotation.w") };
                var e = new[] { Curve(clip, Paths[i], "localEulerAnglesRaw.x"), Curve(clip, Paths[i], "localEulerAnglesRaw.y"), Curve(clip, Paths[i], "localEulerAnglesRaw.z") };
                var p = new[] { Curve(clip, Paths[i], "m_LocalPosition.x"), Curve(clip, Paths[i], "m_LocalPosition.y"), Curve(clip, Paths[i], "m_LocalPosition.z") };
                for (int f = 0; f < frames; f++)
                {
                    float t = f / clip.frameRate;
                    var rest = new Quaternion(UnitySkeleton.RestRotations[i * 4], UnitySkeleton.RestRotations[i * 4 + 1], UnitySkeleton.RestRotations[i * 4 + 2], UnitySkeleton.RestRotations[i * 4 + 3]);
                    var rot = q[3] != null ? new Quaternion(q[0].Evaluate(t), q[1].Evaluate(t), q[2].Evaluate(t), q[3].Evaluate(t)).normalized
                            : e[0] != null ? Quaternion.Euler(e[0].Evaluate(t), e[1].Evaluate(t), e[2].Evaluate(t)) : rest;
                    Put4(m.Rotations, f * j + i, rot);
                    if (i == 0)
                    {
                        var restPos = new Vector3(UnitySkeleton.RestTranslations[0], UnitySkeleton.RestTranslations[1], UnitySkeleton.RestTranslations[2]);
                        Put3(m.RootTranslations, f, p[0] != null ? new Vector3(p[0].Evaluate(t), p[1].Evaluate(t), p[2].Evaluate(t)) : restPos);
                    }
                }
            }
            return m;
        }

        /// <summary>Writes frames of <paramref name="result"/> (Unity space, frame 0 = clip frame
        /// <paramref name="firstClipFrame"/>) into the clip as one undoable step: keys inside the result's time
        /// range are replaced, keys outside it stay.</summary>
        public void WriteClip(AnimationClip clip, Core.Motion result, int firstClipFrame)
        {
            Undo.RegisterCompleteObjectUndo(clip, "AnyMoLe Fill");
            int j = Joints.Count;
            float t0 = firstClipFrame / clip.frameRate, t1 = (firstClipFrame + result.FrameCount - 1) / clip.frameRate;
            string[] rot = { "m_LocalRotation.x", "m_LocalRotation.y", "m_LocalRotation.z", "m_LocalRotation.w" };
            string[] pos = { "m_LocalPosition.x", "m_LocalPosition.y", "m_LocalPosition.z" };
            for (int i = 0; i < j; i++)
            {
                for (int c = 0; c < 4; c++)
                    Replace(clip, Paths[i], rot[c], t0, t1, f => result.Rotations[(f * j + i) * 4 + c], result.FrameCount, clip.frameRate);
                if (i == 0)
                    for (int c = 0; c < 3; c++)
                        Replace(clip, Paths[0], pos[c], t0, t1, f => result.RootTranslations[f * 3 + c], result.FrameCount, clip.frameRate);
            }
            clip.EnsureQuaternionContinuity();
            EditorUtility.SetDirty(clip);
        }

        static void Replace(AnimationClip clip, string path, string property, float t0, float t1, Func<int, float> value, int frames, float fps)
        {
            var binding = EditorCurveBinding.FloatCurve(path, typeof(Transform), property);
            var old = AnimationUtility.GetEditorCurve(clip, binding);
            var keys = new List<Keyframe>();
            const float eps = 1e-4f;
            if (old != null)
                foreach (var k in old.keys)
                    if (k.time < t0 - eps || k.time > t1 + eps) keys.Add(k);
            for (int f = 0; f < frames; f++) keys.Add(new Keyframe(t0 + f / fps, value(f)));
            keys.Sort((a, b) => a.time.CompareTo(b.time));
            AnimationUtility.SetEditorCurve(clip, binding, new AnimationCurve(keys.ToArray()));
        }
    }
}
