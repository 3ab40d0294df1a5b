// tests/data/conversions/vectors.json (issue 15.10): the core's UnitySpace must turn the canonical skeleton,
// clip, mesh points and inverse bind matrices into the file's Unity values, and those back into canonical.
using System;
using System.Collections;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Web.Script.Serialization;
using AnyMoLe.Core;
using NUnit.Framework;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class ConversionVectorTests
    {
        static Dictionary<string, object> Space(string name)
        {
            var path = Path.Combine(Paths.Repo, "tests/data/conversions/vectors.json");
            var all = new JavaScriptSerializer { MaxJsonLength = int.MaxValue }.Deserialize<Dictionary<string, object>>(File.ReadAllText(path));
            return (Dictionary<string, object>)all[name];
        }

        /// <summary>Nested lists flattened in order, as float32.</summary>
        static float[] Flat(object value)
        {
            var r = new List<float>();
            Action<object> walk = null;
            walk = o =>
            {
                var list = o as ArrayList;
                if (list != null) foreach (var x in list) walk(x);
                else r.Add((float)Convert.ToDouble(o));
            };
            walk(value);
            return r.ToArray();
        }

        /// <summary>J × [row][column] matrices as column-major 16-float blocks (element (r, c) at c * 4 + r).</summary>
        static float[] ColumnMajor(object value)
        {
            var rowMajor = Flat(value);
            var r = new float[rowMajor.Length];
            for (int m = 0; m < rowMajor.Length / 16; m++)
                for (int row = 0; row < 4; row++)
                    for (int c = 0; c < 4; c++) r[m * 16 + c * 4 + row] = rowMajor[m * 16 + row * 4 + c];
            return r;
        }

        static Skeleton SkeletonOf(Dictionary<string, object> s, Dictionary<string, object> canonical, int joints)
        {
            return new Skeleton
            {
                Names = ((ArrayList)canonical["joint_names"]).Cast<string>().ToArray(),
                Parents = ((ArrayList)canonical["parent_indices"]).Cast<object>().Select(Convert.ToInt32).ToArray(),
                RestTranslations = Flat(s["rest_translations"]), RestRotations = Flat(s["rest_rotations"]),
            };
        }

        static Motion MotionOf(Dictionary<string, object> s, int joints)
        {
            var rotations = Flat(s["rotations"]);
            return new Motion { Fps = 30, FrameCount = rotations.Length / (joints * 4), JointCount = joints, Rotations = rotations, RootTranslations = Flat(s["root_translations"]) };
        }

        [Test]
        public void CanonicalVectorsBecomeTheFilesUnityValuesAndBack()
        {
            var canonical = Space("canonical");
            var unity = Space("unity");
            int joints = ((ArrayList)canonical["joint_names"]).Count;

            var skeleton = UnitySpace.Convert(SkeletonOf(canonical, canonical, joints));
            CollectionAssert.AreEqual(Flat(unity["rest_translations"]), skeleton.RestTranslations);
            CollectionAssert.AreEqual(Flat(unity["rest_rotations"]), skeleton.RestRotations);
            CollectionAssert.AreEqual(Flat(canonical["rest_rotations"]), UnitySpace.Convert(skeleton).RestRotations);

            var motion = UnitySpace.Convert(MotionOf(canonical, joints));
            CollectionAssert.AreEqual(Flat(unity["rotations"]), motion.Rotations);
            CollectionAssert.AreEqual(Flat(unity["root_translations"]), motion.RootTranslations);
            CollectionAssert.AreEqual(Flat(canonical["rotations"]), UnitySpace.Convert(motion).Rotations);

            // Mesh points and inverse bind matrices through the mesh path, the renderer at the Animator root.
            var points = Flat(canonical["points"]);
            var mesh = new SkinnedMesh { Positions = points, InverseBindMatrices = ColumnMajor(canonical["inverse_bind_matrices"]) };
            var inUnity = UnitySpace.ToUnity(mesh);
            ConversionTests.AssertClose(Flat(unity["points"]), inUnity.Vertices, 0, "points");
            ConversionTests.AssertClose(ColumnMajor(unity["inverse_bind_matrices"]), inUnity.Bindposes, 1e-6, "inverse bind matrices");
            var back = UnitySpace.ToCanonical("vectors", skeleton, inUnity);
            ConversionTests.AssertClose(points, back.Mesh.Positions, 0, "points back");
            ConversionTests.AssertClose(mesh.InverseBindMatrices, back.Mesh.InverseBindMatrices, 1e-6, "inverse bind matrices back");
        }
    }
}
